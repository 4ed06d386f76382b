"""Which trained model the evaluate stage keeps: the tuned configuration's, from the first seed.

The seed is fixed before any run (``evaluate.seeds[0]``), never chosen by a test score. When
the sweep kept the initial configuration, that is the model kept, and the note says so. When
the tuned configuration's first-seed run has no model (it diverged or ran out of memory), the
initial configuration's first-seed model is kept instead, with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pedtune.errors import PedtuneError
from pedtune.evaluate.runs import INITIAL, TUNED, RunResult


@dataclass(frozen=True)
class KeptModel:
    config: str  # INITIAL | TUNED: whose weights these are
    seed: int
    state_dict: Mapping[str, torch.Tensor]
    note: str  # why this model, in a sentence

    def describe(self) -> dict[str, Any]:
        return {"config": self.config, "seed": self.seed, "note": self.note}


def kept_model(results: Iterable[RunResult], seeds: Sequence[int], tuned_is_initial: bool) -> KeptModel:
    """The model the stage keeps from ``results`` (tuned results standing for initial ones included)."""
    first = seeds[0]
    by_name = {result.name: result for result in results if result.seed == first}
    tuned, initial = by_name.get(TUNED), by_name.get(INITIAL)
    if tuned_is_initial and tuned is not None and tuned.state_dict is not None:
        return KeptModel(INITIAL, first, tuned.state_dict, f"the sweep kept the initial configuration: its model "
                                                          f"from seed {first}")
    if tuned is not None and tuned.state_dict is not None:
        return KeptModel(TUNED, first, tuned.state_dict, f"the tuned configuration's model from seed {first} "
                                                         "(the first evaluate seed)")
    why = tuned.failure if tuned is not None else "it did not run"
    if initial is not None and initial.state_dict is not None:
        return KeptModel(INITIAL, first, initial.state_dict,
                         f"the tuned configuration's seed-{first} run has no model ({why}): the initial "
                         f"configuration's model from seed {first} is kept instead")
    raise PedtuneError(f"no model to keep: neither configuration's seed-{first} run finished ({why}); "
                       "see the evaluate report")
