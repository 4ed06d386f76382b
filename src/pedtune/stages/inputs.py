"""The one loader of what the training stages read: the split file, the dataset's index and samples, the
pretrained weights.

Every stage that trains (train, tune, evaluate, record) opens its inputs here, from the paths
dvc.yaml declares (:mod:`pedtune.paths`), so that how a split part becomes decoded samples and
which weights a run starts from is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from pedtune import console, paths
from pedtune.config import StudyConfig
from pedtune.data.cache_memory import cache_footprint
from pedtune.data.dataset import Reader, SampleSet, reader_for
from pedtune.data.index import DatasetIndex, read_index
from pedtune.data.split import Split, read_split
from pedtune.model.weights import load_weights

log = console.get(__name__)


@dataclass(frozen=True)
class StageInputs:
    """The split a stage trains on, the dataset's index and content hash; samples and weights opened on demand."""

    config: StudyConfig
    split: Split
    dataset_hash: str
    data_root: Path
    index: DatasetIndex
    reader: Reader

    def samples(self, part: str) -> SampleSet:
        """The decoded samples of a split part (``train``, ``val``, ``test``, ``train+val``); the parts
        that are scored (val, test) with their ground truth. With ``data.cache`` on, the memory the
        whole split takes is stated (and held to ``data.cache_budget_gib``) before the first is decoded."""
        model, data = self.config.model, self.config.data
        samples = SampleSet(self.data_root, self.split.part(part), model.min_size, model.max_size, data.cache,
                            self.reader)
        if data.cache:
            self.cache_statement  # noqa: B018 - checked (and stated) once, before the first sample is decoded
        return samples.preload(f"{part} split", scored=part in ("val", "test"))

    @cached_property
    def cache_statement(self) -> str:
        """The memory the whole split's cached samples take, held to ``data.cache_budget_gib`` (raises
        when over it) and logged; once per stage, whichever part is opened first."""
        model = self.config.model
        everything = self.split.train + self.split.val + self.split.test
        statement = cache_footprint(self.index, everything, model.min_size, model.max_size).check(
            self.config.data.cache_budget_gib)
        log.info(statement)
        return statement

    def pretrained(self) -> dict[str, torch.Tensor]:
        """The weights every run starts from (checked against model.arch and model.weights), with the
        pretrained predictors' rows of the dataset's categories that the pretrained model knows by name."""
        return load_weights(paths.PRETRAINED, self.config.model, self.index.labels)


def read_inputs(config: StudyConfig, absolute: bool = False) -> StageInputs:
    """Read the split and the dataset's index (cheap: no image is opened); ``absolute`` for runs in their own
    working folder, such as Tune's trials."""
    split, dataset_hash = read_split(paths.SPLIT_FILE)
    index = read_index(paths.DATA_INDEX)
    root = paths.DATA_ROOT.resolve() if absolute else paths.DATA_ROOT
    return StageInputs(config, split, dataset_hash, root, index, reader_for(root, index))
