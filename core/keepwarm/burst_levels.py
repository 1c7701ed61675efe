"""When an experiment needs an extra container again: the burst gaps an extra container's window is learned from.

Why this module exists: a container takes `per_container` requests at once (Modal's
`@modal.concurrent(max_inputs=...)`, MODAL_CONCURRENT_INPUTS; the Ray emulator's target per replica),
so an experiment needs k containers while more than (k − 1) · per_container of its requests are in
flight. When it drops below, the k-th container idles until the experiment needs k again. That time —
the *burst gap* of level k ≥ 2 — is what an extra container's scaledown window bridges or not, as the
idle gap between requests is for the last container. `BurstLevels` counts one experiment's requests
in flight and remembers when each level was last left, so every arrival that reaches a level left
before yields its burst gap; the activity tracker (a learning policy's `ExperimentRecord`), the Modal
ingress's arrival publisher and the simulator feed it the same arrivals and completions, so all three
learn the same gaps.

It also keeps the experiment's *width*: the most containers it needed at once in its latest spell —
since it last paused for `SPELL_BREAK_S` — or the spell before, whichever is more. That is how many
containers a pre-warm plan brings back (a periodic job that runs ten containers' worth of requests at
once needs ten when it comes back, not one) and holds through a spell.
"""

from __future__ import annotations

#: Levels above this are not remembered (a pool never runs more containers than a platform's cap).
MAX_LEVEL = 256
#: A pause this long with nothing in flight ends a spell: a minute, as long as a pre-warm plan's pool
#: keeps idle containers (controller.PREWARM_PLAN_WINDOW_S) — within a spell they are reused.
SPELL_BREAK_S = 60


class BurstLevels:
    """One experiment's requests in flight, and when each container level ≥ 2 was last left (not thread-safe)."""

    __slots__ = ("in_flight", "per_container", "_spell", "_previous", "_left", "_idle_since")

    def __init__(self, per_container: int = 1, width: int = 0) -> None:
        self.in_flight = 0
        #: Requests one container takes at once.
        self.per_container = max(1, per_container)
        self._spell = 0  # the most containers needed at once in the latest spell
        self._previous = width  # ... and in the spell before
        self._left: list[float | None] = []  # _left[k - 2]: when the experiment last needed k containers
        self._idle_since: float | None = None  # when its last request in flight ended

    def arrive(self, now: float) -> float | None:
        """A request arrived at `now`: the burst gap of the container level it makes the experiment
        reach (None: it needs no new container, or a level never reached before)."""
        if not self.in_flight and self._idle_since is not None and now - self._idle_since >= SPELL_BREAK_S:
            self._previous, self._spell = self._spell, 0  # a new spell
        self.in_flight += 1
        per = self.per_container
        if (self.in_flight - 1) % per:  # the container of the level in force has room for it
            return None
        level = (self.in_flight - 1) // per + 1
        self._spell = max(self._spell, level)
        index = level - 2
        left = self._left[index] if 0 <= index < len(self._left) else None
        return None if left is None else max(0.0, now - left)

    @property
    def width(self) -> int:
        """The most containers needed at once in the latest spell or the one before (0: none yet)."""
        return max(self._spell, self._previous)

    def widen(self, width: int, new_spell: bool = False) -> None:
        """Another process saw the experiment `width` containers wide: in the latest spell, or
        (`new_spell`) in one that began after it."""
        if new_spell:
            self._previous, self._spell = self._spell, width
        else:
            self._spell = max(self._spell, width)

    def complete(self, now: float) -> None:
        """A request completed at `now` (ignored when none is in flight)."""
        if not self.in_flight:
            return
        per = self.per_container
        if not (self.in_flight - 1) % per:  # the last request of its level: the level is left
            index = (self.in_flight - 1) // per - 1
            if 0 <= index < MAX_LEVEL:
                if index >= len(self._left):
                    self._left.extend([None] * (index + 1 - len(self._left)))
                self._left[index] = now
        self.in_flight -= 1
        if not self.in_flight:
            self._idle_since = now
