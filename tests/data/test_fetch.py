from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from pedtune.config.schema import DataConfig, SyntheticConfig
from pedtune.data.archive import find_dataset_root, safe_extract, verify_archive
from pedtune.data.checksum import dataset_hash, md5sum
from pedtune.data.download import _PlainProgress, download
from pedtune.data.fetch import fetch_dataset
from pedtune.data.validation import validate_dataset
from pedtune.errors import DataError

# ---------------------------------------------------------------------------- helpers


def make_zip(root: Path, zip_path: Path, top: str = "PennFudanPed") -> Path:
    """Zip ``root`` the way the official archive is laid out: everything under ``top/``."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(root.rglob("*")):
            arcname = f"{top}/{path.relative_to(root).as_posix()}" if top else path.relative_to(root).as_posix()
            zf.write(path, arcname)
    return zip_path


def zip_config(zip_path: Path, **overrides: object) -> DataConfig:
    values: dict[str, object] = {
        "source": "zip",
        "local_path": str(zip_path),
        "md5": md5sum(zip_path),
        "size_bytes": zip_path.stat().st_size,
        "expected_images": None,  # a user-built archive: any count
    }
    values.update(overrides)
    return DataConfig(**values)  # type: ignore[arg-type]


def url_config(archive: Path, **overrides: object) -> DataConfig:
    """A url source served from ``archive`` (file://), with its md5 unless overridden."""
    fields = {"source": "url", "url": archive.as_uri(), "md5": md5sum(archive), "size_bytes": None,
              "expected_images": None}
    return DataConfig(**{**fields, **overrides})


def hidden_leftovers(parent: Path) -> list[str]:
    """Temp folders/files fetch_dataset or atomic_path could leave behind (they start with '.')."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def synthetic_zip(tmp_path: Path, synthetic_root: Path) -> Path:
    return make_zip(synthetic_root, tmp_path / "archives" / "PennFudanPed.zip")


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """An empty parent for ``dest``, so leftovers are easy to spot."""
    path = tmp_path / "out"
    path.mkdir()
    return path


# ---------------------------------------------------------------------------- validation


def test_validate_synthetic_ok(synthetic_root: Path) -> None:
    summary = validate_dataset(synthetic_root)
    assert summary.num_images == 6
    assert summary.stems[0] == "FudanPed00001" and len(summary.stems) == 6
    assert summary.num_instances >= 6


def test_validate_count_mismatch(synthetic_root: Path) -> None:
    with pytest.raises(DataError, match="found 6 images, expected 170"):
        validate_dataset(synthetic_root, expected_count=170)


@pytest.mark.parametrize("folder", ["PNGImages", "PedMasks", "Annotation"])
def test_missing_folder_is_named(synthetic_root: Path, folder: str) -> None:
    shutil.rmtree(synthetic_root / folder)
    with pytest.raises(DataError, match=f"missing folder {folder}/"):
        validate_dataset(synthetic_root)


def test_dir_source_missing_pedmasks(synthetic_root: Path, out_dir: Path) -> None:
    shutil.rmtree(synthetic_root / "PedMasks")
    cfg = DataConfig(source="dir", local_path=str(synthetic_root))
    with pytest.raises(DataError, match="PedMasks"):
        fetch_dataset(cfg, out_dir / "PennFudanPed")
    assert list(out_dir.iterdir()) == []


def test_image_without_mask(synthetic_root: Path) -> None:
    (synthetic_root / "PedMasks" / "PennPed00002_mask.png").unlink()
    with pytest.raises(DataError, match=r"PennPed00002\.png has no mask PedMasks/PennPed00002_mask\.png"):
        validate_dataset(synthetic_root)


def test_mask_without_image(synthetic_root: Path) -> None:
    (synthetic_root / "PNGImages" / "FudanPed00003.png").unlink()
    (synthetic_root / "Annotation" / "FudanPed00003.txt").unlink()
    with pytest.raises(DataError, match=r"FudanPed00003_mask\.png has no image"):
        validate_dataset(synthetic_root)


def test_image_without_annotation(synthetic_root: Path) -> None:
    (synthetic_root / "Annotation" / "FudanPed00002.txt").unlink()
    with pytest.raises(DataError, match=r"FudanPed00002\.png has no annotation"):
        validate_dataset(synthetic_root)


def test_mask_size_differs(synthetic_root: Path) -> None:
    mask_path = synthetic_root / "PedMasks" / "FudanPed00002_mask.png"
    Image.open(mask_path).resize((60, 40), Image.NEAREST).save(mask_path)
    with pytest.raises(DataError) as info:
        validate_dataset(synthetic_root)
    message = str(info.value)
    assert "FudanPed00002_mask.png" in message and "60x40" in message and "64x48" in message


def test_mask_without_instances(synthetic_root: Path) -> None:
    mask_path = synthetic_root / "PedMasks" / "PennPed00001_mask.png"
    Image.new("L", (64, 48), 0).save(mask_path)
    with pytest.raises(DataError, match=r"PennPed00001_mask\.png: mask has no instances"):
        validate_dataset(synthetic_root)


def test_rgb_mask_rejected(synthetic_root: Path) -> None:
    mask_path = synthetic_root / "PedMasks" / "PennPed00001_mask.png"
    Image.open(mask_path).convert("RGB").save(mask_path)
    with pytest.raises(DataError, match="single-channel"):
        validate_dataset(synthetic_root)


@pytest.mark.parametrize("relpath", ["PNGImages/PennPed00003.png", "PedMasks/FudanPed00001_mask.png"])
def test_truncated_png_is_named(synthetic_root: Path, relpath: str) -> None:
    path = synthetic_root / relpath
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"{Path(relpath).name}: cannot decode"):
        validate_dataset(synthetic_root)


def test_find_dataset_root_tolerates_both_layouts(synthetic_root: Path, tmp_path: Path) -> None:
    assert find_dataset_root(synthetic_root) == synthetic_root
    assert find_dataset_root(synthetic_root.parent) == synthetic_root
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no PNGImages"):
        find_dataset_root(tmp_path / "empty")


def test_dataset_hash_is_stable_and_content_sensitive(synthetic_root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root, copy)
    assert dataset_hash(synthetic_root) == dataset_hash(copy)
    (copy / "readme.txt").write_bytes(b"changed")
    assert dataset_hash(synthetic_root) != dataset_hash(copy)


# ---------------------------------------------------------------------------- archives


def test_verify_archive_reports_expected_and_actual(synthetic_zip: Path) -> None:
    actual_md5, actual_size = md5sum(synthetic_zip), synthetic_zip.stat().st_size
    with pytest.raises(DataError) as info:
        verify_archive(synthetic_zip, "0" * 32, None)
    assert str(synthetic_zip) in str(info.value) and "0" * 32 in str(info.value) and actual_md5 in str(info.value)
    with pytest.raises(DataError) as info:
        verify_archive(synthetic_zip, actual_md5, actual_size + 1)
    assert f"{actual_size + 1} bytes" in str(info.value) and f"{actual_size} bytes" in str(info.value)
    verify_archive(synthetic_zip, actual_md5, actual_size)


@pytest.mark.parametrize(
    ("member", "symlink"),
    [("../evil.txt", False), ("PennFudanPed/../../evil.txt", False), ("/tmp/evil-abs.txt", False), ("link", True)],
)
def test_safe_extract_refuses_unsafe_members(tmp_path: Path, member: str, symlink: bool) -> None:
    zip_path = tmp_path / "evil.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("PennFudanPed/readme.txt", "fine")
        info = zipfile.ZipInfo(member)
        if symlink:
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd" if symlink else "evil")
    dest = tmp_path / "deep" / "extract"
    with pytest.raises(DataError, match=f"refusing member '{member}'"):
        safe_extract(zip_path, dest)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()
    assert list(dest.rglob("*")) == []  # checked before writing anything


def test_safe_extract_names_an_encrypted_member(tmp_path: Path) -> None:
    zip_path = tmp_path / "locked.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("PennFudanPed/PNGImages/a.png", b"x" * 10)
    # Set the "encrypted" flag as a password-protected zip does (zipfile cannot write one): in
    # the member's local header (offset 6) and its central directory entry (offset 8).
    data = bytearray(zip_path.read_bytes())
    data[6] |= 0x1
    data[data.find(b"PK\x01\x02") + 8] |= 0x1
    zip_path.write_bytes(bytes(data))
    dest = tmp_path / "extract"
    with pytest.raises(DataError, match="member 'PennFudanPed/PNGImages/a.png' is encrypted"):
        safe_extract(zip_path, dest)
    assert list(dest.rglob("*")) == []  # checked before writing anything


def test_fetch_refuses_evil_zip(tmp_path: Path, synthetic_root: Path, out_dir: Path) -> None:
    zip_path = make_zip(synthetic_root, tmp_path / "archives" / "evil.zip")
    with zipfile.ZipFile(zip_path, "a") as zf:
        zf.writestr("../evil.txt", "evil")
    with pytest.raises(DataError, match=r"\.\./evil\.txt"):
        fetch_dataset(zip_config(zip_path), out_dir / "PennFudanPed")
    assert not (tmp_path / "evil.txt").exists() and not (out_dir.parent / "evil.txt").exists()
    assert list(out_dir.iterdir()) == []


def test_truncated_zip(synthetic_zip: Path, tmp_path: Path, out_dir: Path) -> None:
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(synthetic_zip.read_bytes()[: synthetic_zip.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated zip"):
        safe_extract(truncated, tmp_path / "x")
    # A checksum that matches the damaged file (user-made) still fails at extraction.
    with pytest.raises(DataError, match="truncated"):
        fetch_dataset(zip_config(truncated), out_dir / "PennFudanPed")
    assert list(out_dir.iterdir()) == []


def test_corrupt_member_crc(synthetic_zip: Path, tmp_path: Path) -> None:
    data = bytearray(synthetic_zip.read_bytes())
    with zipfile.ZipFile(synthetic_zip) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(".txt") and i.file_size > 100)
    # Local header is 30 bytes + name + extra; flip a byte of the stored (uncompressed) data.
    with open(synthetic_zip, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    data[info.header_offset + 30 + name_len + extra_len + 50] ^= 0xFF
    broken = tmp_path / "crc.zip"
    broken.write_bytes(bytes(data))
    with pytest.raises(DataError, match=info.filename):
        safe_extract(broken, tmp_path / "x")


# ---------------------------------------------------------------------------- fetch_dataset


def test_fetch_from_local_zip(synthetic_zip: Path, synthetic_root: Path, out_dir: Path) -> None:
    dest = out_dir / "PennFudanPed"
    summary = fetch_dataset(zip_config(synthetic_zip), dest)
    assert summary.num_images == 6
    assert (dest / "PNGImages" / "FudanPed00001.png").is_file()
    assert dataset_hash(dest) == dataset_hash(synthetic_root)
    assert hidden_leftovers(out_dir) == []


def test_fetch_zip_without_top_folder(tmp_path: Path, synthetic_root: Path, out_dir: Path) -> None:
    zip_path = make_zip(synthetic_root, tmp_path / "flat.zip", top="")
    fetch_dataset(zip_config(zip_path, size_bytes=None), out_dir / "ds")
    assert dataset_hash(out_dir / "ds") == dataset_hash(synthetic_root)


def test_wrong_md5_creates_nothing(synthetic_zip: Path, out_dir: Path) -> None:
    dest = out_dir / "PennFudanPed"
    with pytest.raises(DataError, match="md5 mismatch"):
        fetch_dataset(zip_config(synthetic_zip, md5="f" * 32), dest)
    assert not dest.exists()
    assert list(out_dir.iterdir()) == []


def test_wrong_size(synthetic_zip: Path, out_dir: Path) -> None:
    with pytest.raises(DataError, match="size mismatch"):
        fetch_dataset(zip_config(synthetic_zip, size_bytes=123), out_dir / "PennFudanPed")
    assert list(out_dir.iterdir()) == []


def test_missing_local_zip(tmp_path: Path, out_dir: Path) -> None:
    cfg = DataConfig(source="zip", local_path=str(tmp_path / "nope.zip"))
    with pytest.raises(DataError, match="nope.zip: zip file not found"):
        fetch_dataset(cfg, out_dir / "PennFudanPed")


def test_failed_fetch_keeps_existing_dest(
    synthetic_zip: Path, synthetic_root: Path, out_dir: Path, tmp_path: Path
) -> None:
    dest = out_dir / "PennFudanPed"
    other = DataConfig(source="synthetic", synthetic=SyntheticConfig(num_images=3, seed=7, height=32, width=32))
    fetch_dataset(other, dest)
    before = dataset_hash(dest)

    with pytest.raises(DataError, match="md5"):
        fetch_dataset(zip_config(synthetic_zip, md5="0" * 32), dest)
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_root, broken)
    (broken / "PedMasks" / "PennPed00001_mask.png").unlink()
    with pytest.raises(DataError, match="has no mask"):
        fetch_dataset(zip_config(make_zip(broken, tmp_path / "broken.zip")), dest)

    assert dataset_hash(dest) == before
    assert hidden_leftovers(out_dir) == []


def test_successful_fetch_replaces_dest(synthetic_zip: Path, synthetic_root: Path, out_dir: Path) -> None:
    dest = out_dir / "PennFudanPed"
    fetch_dataset(DataConfig(source="synthetic", synthetic=SyntheticConfig(num_images=3, seed=7)), dest)
    fetch_dataset(zip_config(synthetic_zip), dest)
    assert dataset_hash(dest) == dataset_hash(synthetic_root)
    assert hidden_leftovers(out_dir) == []


def test_fetch_synthetic(out_dir: Path, synthetic_cfg: SyntheticConfig, synthetic_root: Path) -> None:
    summary = fetch_dataset(DataConfig(source="synthetic", synthetic=synthetic_cfg), out_dir / "ds")
    assert summary.num_images == synthetic_cfg.num_images
    assert dataset_hash(out_dir / "ds") == dataset_hash(synthetic_root)
    assert hidden_leftovers(out_dir) == []


def test_fetch_from_file_url(
    synthetic_zip: Path, synthetic_root: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = DataConfig(
        source="url", url=synthetic_zip.as_uri(), md5=md5sum(synthetic_zip), size_bytes=synthetic_zip.stat().st_size,
        expected_images=6,
    )
    dest = out_dir / "PennFudanPed"
    summary = fetch_dataset(cfg, dest)
    assert summary.num_images == 6
    assert dataset_hash(dest) == dataset_hash(synthetic_root)
    assert hidden_leftovers(out_dir) == []
    err = capsys.readouterr().err
    assert "downloading" in err and "PennFudanPed.zip" in err


def test_url_cache_in_work_dir(
    synthetic_zip: Path, out_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = url_config(synthetic_zip)
    cache = tmp_path / "cache"
    fetch_dataset(cfg, out_dir / "ds", work_dir=cache)
    assert (cache / "PennFudanPed.zip").is_file()
    capsys.readouterr()
    fetch_dataset(cfg, out_dir / "ds", work_dir=cache)
    assert "using cached archive" in capsys.readouterr().err


def test_a_download_with_the_wrong_md5_creates_nothing_and_is_not_cached(
    synthetic_zip: Path, out_dir: Path, tmp_path: Path
) -> None:
    cfg = url_config(synthetic_zip, md5="f" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="md5 mismatch"):
        fetch_dataset(cfg, out_dir / "ds", work_dir=cache)
    assert list(out_dir.iterdir()) == []
    assert not (cache / "PennFudanPed.zip").exists()


def test_a_corrupt_cached_archive_is_downloaded_again(
    synthetic_zip: Path, out_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = url_config(synthetic_zip)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "PennFudanPed.zip").write_bytes(synthetic_zip.read_bytes()[:-100])  # an interrupted download
    fetch_dataset(cfg, out_dir / "ds", work_dir=cache)
    err = capsys.readouterr().err
    assert "cached archive rejected, downloading again: " in err and "md5 mismatch" in err
    assert (cache / "PennFudanPed.zip").read_bytes() == synthetic_zip.read_bytes()
    assert (out_dir / "ds" / "PNGImages").is_dir()


def test_unreachable_url_mentions_local_path(out_dir: Path) -> None:
    cfg = DataConfig(source="url", url="http://127.0.0.1:9/x.zip")
    with pytest.raises(DataError, match="local_path") as info:
        fetch_dataset(cfg, out_dir / "PennFudanPed")
    assert "download of http://127.0.0.1:9/x.zip failed" in str(info.value)
    assert "source: zip" in str(info.value)
    assert list(out_dir.iterdir()) == []


def test_download_progress_and_short_read(
    synthetic_zip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = synthetic_zip.stat().st_size
    target = tmp_path / "dl" / "a.zip"
    download(synthetic_zip.as_uri(), target, expected_size=size, progress=True)
    assert target.read_bytes() == synthetic_zip.read_bytes()
    assert "a.zip" in capsys.readouterr().err  # tqdm (or the plain fallback) labels the bar

    with pytest.raises(DataError, match="expected"):
        download(synthetic_zip.as_uri(), tmp_path / "dl" / "b.zip", expected_size=size + 10, progress=False)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["a.zip"]  # no partial file left


def test_plain_progress_fallback(capsys: pytest.CaptureFixture[str]) -> None:
    bar = _PlainProgress(total=100, desc="x.zip")
    for _ in range(10):
        bar.update(10)
    bar.close()
    err = capsys.readouterr().err
    assert "x.zip" in err and "(100%)" in err


def test_dir_source_counts_images_as_params_say(synthetic_root: Path, out_dir: Path) -> None:
    dest = out_dir / "PennFudanPed"
    with pytest.raises(DataError, match=r"found 6 images, expected 170 .*data.expected_images"):
        fetch_dataset(DataConfig(source="dir", local_path=str(synthetic_root)), dest)
    assert not dest.exists() and hidden_leftovers(out_dir) == []
    for expected in (6, None):
        summary = fetch_dataset(DataConfig(source="dir", local_path=str(synthetic_root), expected_images=expected), dest)
        assert summary.num_images == 6 and dataset_hash(dest) == dataset_hash(synthetic_root)


def test_zip_short_of_expected_images_creates_nothing(synthetic_zip: Path, out_dir: Path) -> None:
    dest = out_dir / "PennFudanPed"
    with pytest.raises(DataError, match="found 6 images, expected 7"):
        fetch_dataset(zip_config(synthetic_zip, expected_images=7), dest)
    assert not dest.exists() and hidden_leftovers(out_dir) == []


def test_dir_source_on_real_copy(real_pennfudan: Path, out_dir: Path) -> None:
    dest = out_dir / "PennFudanPed"
    summary = fetch_dataset(DataConfig(source="dir", local_path=str(real_pennfudan)), dest)
    assert (summary.num_images, summary.num_instances) == (170, 423)
    assert sum(s.startswith("PennPed") for s in summary.images) == 96
    assert dataset_hash(dest) == dataset_hash(real_pennfudan) == summary.dataset_hash
    assert hidden_leftovers(out_dir) == []
