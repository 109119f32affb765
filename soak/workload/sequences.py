"""What soak reads from a sequence-batched model's config and how it paces its sequences.

Triton's sequence batcher (core `src/sequence_batch_scheduler/`) gives each sequence a slot
(per instance: `oldest.max_candidate_sequences`, else max(1, max_batch_size)); a START that
finds none waits in a backlog. Its idle clock is the time of the sequence's last request, and it
keeps running in the backlog: a sequence that waited there for the idle timeout (behind a
sequence soak abandoned) is force-ended by the reaper within ~50 ms of getting its slot, and its
next request is refused "must specify the START flag on the first request of the sequence"
(seen on 2.51, tests/workload/test_sequences.py). So soak never starts a sequence that would
queue behind abandoned ones: it waits until Triton has reaped them.

Implicit state (`sequence_batching.state`) is Triton's to send: the scheduler overrides the
state input of every request, so the plan leaves state inputs out.
"""

from __future__ import annotations

import itertools
import time
import weakref
from dataclasses import dataclass
from typing import Any

from soak.target.interface import SEQUENCE_END, SEQUENCE_START

#: Triton's default max_sequence_idle_microseconds (core constants.h).
DEFAULT_IDLE_US = 1_000_000
#: Past the idle timeout, time for the reaper's pass and the slot's release to be processed.
REAP_MARGIN_S = 0.1

# Correlation ids, unique in the process: no two sequences of one server share one.
_IDS = itertools.count(1)
# Per server and model: correlation id -> time of the last request of each abandoned sequence
# Triton may still hold a slot for. Weak, so a deleted server's entries go with it.
_ABANDONED: weakref.WeakKeyDictionary[Any, dict[str, dict[int, float]]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class SequenceConfig:
    """A sequence model's batcher as its config states it."""

    slots: int  # sequences served at once (all instances)
    idle_s: float  # max_sequence_idle_microseconds
    state_inputs: frozenset[str] = frozenset()  # implicit state: Triton sends these
    state_outputs: frozenset[str] = frozenset()


def sequence_config(config: dict) -> SequenceConfig | None:
    """None for a model without `sequence_batching`."""
    batching = config.get("sequence_batching")
    if batching is None:
        return None
    per_instance = max(1, int(config.get("max_batch_size", 0) or 0))
    candidates = int((batching.get("oldest") or {}).get("max_candidate_sequences", 0) or 0)
    if candidates > 0:
        per_instance = candidates
    groups = config.get("instance_group") or [{}]
    instances = sum(
        max(1, int(g.get("count", 1) or 1)) * max(1, len(g.get("gpus") or [])) for g in groups
    )
    idle_us = int(batching.get("max_sequence_idle_microseconds", 0) or 0) or DEFAULT_IDLE_US
    states = batching.get("state") or []
    return SequenceConfig(
        per_instance * instances,
        idle_us / 1e6,
        frozenset(s["input_name"] for s in states if s.get("input_name")),
        frozenset(s["output_name"] for s in states if s.get("output_name")),
    )


def next_id() -> int:
    return next(_IDS)


def flags(step: int, length: int, last_request: bool) -> int:
    """START at each sequence's first step, END at its last (or at the last request, so that
    no sequence is left open for Triton's idle timeout)."""
    last = step == length - 1 or last_request
    return (SEQUENCE_START if step == 0 else 0) | (SEQUENCE_END if last else 0)


def abandoned(server: Any, model: str, correlation_id: int) -> None:
    """The sequence got a request and will never be ended: Triton holds its slot until the
    idle timeout after this request."""
    _ABANDONED.setdefault(server, {}).setdefault(model, {})[correlation_id] = time.monotonic()


def wait_for_slot(server: Any, model: str, seq: SequenceConfig) -> float:
    """Before a START: while the abandoned sequences Triton may still hold fill every slot,
    sleep until the oldest is reaped. Returns the seconds slept."""
    held = _ABANDONED.get(server, {}).get(model)
    if not held:
        return 0.0
    slept = 0.0
    for _ in range(len(held) + 1):  # each pass reaps at least the oldest
        now = time.monotonic()
        for cid in [c for c, t in held.items() if now - t >= seq.idle_s + REAP_MARGIN_S]:
            del held[cid]
        if len(held) < seq.slots:
            break
        oldest = min(held, key=held.__getitem__)
        pause = max(held.pop(oldest) + seq.idle_s + REAP_MARGIN_S - now, 0.0)
        time.sleep(pause)  # then Triton has reaped it
        slept += pause
    return slept
