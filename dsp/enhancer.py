"""The streaming enhancer: 10 ms in, 10 ms out, 30 ms later.

``process_hop`` runs three steps that can also be driven one by one (a scheduler batching the
network over many streams calls ``analyze``, then the model, then ``synthesize``):

1. ``analyze(hop)``: features of the newest frame τ (NUM_FEATURES float32 values).
2. a :class:`GainSource` maps those features to gains and strengths for frame τ − 2: the
   network (which looks 20 ms ahead), replayed oracle targets, or unity.
3. ``synthesize(gains, strengths)``: applies them to frame τ − 2 and returns the output hop.

The output hop returned at input hop τ is the input of hop τ − 3: 1 440 samples (30 ms) of
delay, constant from the first call.

The relay receives 20 ms packets, two hops. ``process_pair`` runs the network once per packet:

1. ``analyze(hop_a)``, then ``hold()`` keeps hop a's synthesis frame (the next analysis
   overwrites it); ``analyze(hop_b)``.
2. a :class:`PairGainSource` maps both feature vectors to gains for both synthesis frames.
3. ``synthesize_held(...)`` writes hop a's output, then ``synthesize(...)`` hop b's.

The output is bit for bit that of two ``process_hop`` calls. A gain source without
``gains_for_pair`` gets two ``process_hop`` calls.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np

from dsp.analysis import analyze_hop
from dsp.constants import DELAY_SAMPLES, DELAY_SECONDS, HOP_SAMPLES, NUM_BANDS, NUM_FEATURES
from dsp.state import (
    F_RHO_NOW,
    F_RHO_SYNTH,
    I_NONFINITE,
    I_PERIOD_NOW,
    I_PERIOD_SYNTH,
    EnhancerState,
    make_state,
    reset_state,
)
from dsp.synthesis import hold_synthesis_frame, synthesize_held_hop, synthesize_hop

PAIR_SAMPLES = 2 * HOP_SAMPLES  # one 20 ms packet


class GainSource(Protocol):
    """Anything that turns the newest frame's features into gains for frame τ − 2."""

    def reset(self) -> None:
        """Forget all history (a new stream starts)."""

    def gains_for(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (gains[NUM_BANDS], strengths[NUM_BANDS]) in [0, 1] for the frame two hops back."""
        ...


@runtime_checkable
class PairGainSource(GainSource, Protocol):
    """A gain source that answers a packet's two hops in one call."""

    def gains_for_pair(
        self, features_a: np.ndarray, features_b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (gains[2, NUM_BANDS], strengths[2, NUM_BANDS]): row 0 for the frame two hops
        before ``features_a``'s, row 1 for the one two hops before ``features_b``'s. Stepping
        state advances as two ``gains_for`` calls would."""
        ...


class UnityGains:
    """Gains 1, strengths 0: the enhancer then reconstructs its input, delayed."""

    def __init__(self) -> None:
        self._pair_gains = np.ones((2, NUM_BANDS), dtype=np.float32)
        self._pair_strengths = np.zeros((2, NUM_BANDS), dtype=np.float32)
        self._gains = self._pair_gains[0]
        self._strengths = self._pair_strengths[0]

    def reset(self) -> None:
        """Stateless."""

    def gains_for(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unity gains, zero strengths."""
        return self._gains, self._strengths

    def gains_for_pair(
        self, features_a: np.ndarray, features_b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Unity gains, zero strengths, for both frames."""
        return self._pair_gains, self._pair_strengths


class ReplayGains:
    """Replays precomputed per-frame targets (e.g. oracle targets) in step with the stream."""

    def __init__(self, gains: np.ndarray, strengths: np.ndarray) -> None:
        if gains.shape != strengths.shape or gains.ndim != 2 or gains.shape[1] != NUM_BANDS:
            raise ValueError(
                f"expected two [frames, {NUM_BANDS}] arrays, got "
                f"{gains.shape} and {strengths.shape}"
            )
        self._gains = np.ascontiguousarray(gains, dtype=np.float32)
        self._strengths = np.ascontiguousarray(strengths, dtype=np.float32)
        self._unity = UnityGains()
        self._step = 0
        self._pair_gains = np.empty((2, NUM_BANDS), dtype=np.float32)
        self._pair_strengths = np.empty((2, NUM_BANDS), dtype=np.float32)

    def reset(self) -> None:
        """Restart from the first frame."""
        self._step = 0

    def gains_for(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Targets of frame (step − 2), or unity before the first and past the last frame."""
        frame = self._step - 2
        self._step += 1
        if 0 <= frame < self._gains.shape[0]:
            return self._gains[frame], self._strengths[frame]
        return self._unity.gains_for(features)

    def gains_for_pair(
        self, features_a: np.ndarray, features_b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Two :meth:`gains_for` answers stacked (buffers reused by the next call)."""
        for row, features in enumerate((features_a, features_b)):
            gains, strengths = self.gains_for(features)
            self._pair_gains[row] = gains
            self._pair_strengths[row] = strengths
        return self._pair_gains, self._pair_strengths


class Enhancer:
    """Streaming PercepNet enhancer for one mono 48 kHz stream."""

    delay_samples: int = DELAY_SAMPLES
    hop_samples: int = HOP_SAMPLES

    def __init__(
        self,
        gain_source: GainSource | None = None,
        postfilter: bool = True,
        attenuation_limit_db: float | None = None,
    ) -> None:
        self.gain_source: GainSource = gain_source if gain_source is not None else UnityGains()
        self.postfilter = postfilter
        self.min_gain = 0.0
        self.attenuation_limit_db = attenuation_limit_db
        self.state: EnhancerState
        self.state, self.arrays = make_state()
        self._features = self.arrays["features"]
        self._features_a = np.zeros(NUM_FEATURES, dtype=np.float32)
        self._out = np.zeros(HOP_SAMPLES, dtype=np.float32)
        self._pair_out = np.zeros(PAIR_SAMPLES, dtype=np.float32)

    @property
    def attenuation_limit_db(self) -> float | None:
        """Most attenuation any band receives, in dB (None: unlimited)."""
        return None if self.min_gain <= 0.0 else -20.0 * math.log10(self.min_gain)

    @attenuation_limit_db.setter
    def attenuation_limit_db(self, limit_db: float | None) -> None:
        if limit_db is None:
            self.min_gain = 0.0
            return
        if not math.isfinite(limit_db) or limit_db < 0:
            raise ValueError(
                f"attenuation limit must be a finite number of dB >= 0, got {limit_db}"
            )
        self.min_gain = 10.0 ** (-limit_db / 20.0)

    @property
    def delay_seconds(self) -> float:
        """Algorithmic delay: 10 ms window overlap + 20 ms look-ahead."""
        return DELAY_SECONDS

    def reset(self) -> None:
        """Return to the freshly constructed state (and reset the gain source)."""
        reset_state(self.arrays)
        self.gain_source.reset()

    def analyze(self, hop: np.ndarray) -> np.ndarray:
        """Push one hop (480 samples, any float dtype); returns the newest frame's features.

        The returned array is reused by the next call: copy it to keep it.
        """
        if hop.shape != (HOP_SAMPLES,):
            raise ValueError(f"expected a hop of {HOP_SAMPLES} samples, got shape {hop.shape}")
        analyze_hop(self.state, hop)
        return self._features

    def synthesize(
        self, gains: np.ndarray, strengths: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Apply gains/strengths to the frame two hops back; returns the output hop."""
        target = self._out if out is None else out
        synthesize_hop(self.state, gains, strengths, self.postfilter, self.min_gain, target)
        return target

    def hold(self) -> None:
        """Keep the synthesis frame of the last :meth:`analyze` for :meth:`synthesize_held`,
        past the next :meth:`analyze`."""
        hold_synthesis_frame(self.state)

    def synthesize_held(
        self, gains: np.ndarray, strengths: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Apply gains/strengths to the frame kept by :meth:`hold`; returns the output hop.

        Shares the overlap-add with :meth:`synthesize`: call it first, for the earlier frame.
        """
        target = self._out if out is None else out
        synthesize_held_hop(self.state, gains, strengths, self.postfilter, self.min_gain, target)
        return target

    def process_hop(self, hop: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Enhance one hop. Without ``out`` the returned buffer is reused by the next call."""
        features = self.analyze(hop)
        gains, strengths = self.gain_source.gains_for(features)
        return self.synthesize(gains, strengths, out)

    def process_pair(
        self, hop_a: np.ndarray, hop_b: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Enhance two consecutive hops (one 20 ms packet) into ``out`` (960 samples, hop a's
        output first), with one ``gains_for_pair`` call where the gain source has it.

        Without ``out`` the returned buffer is reused by the next call.
        """
        target = self._pair_out if out is None else out
        if target.shape != (PAIR_SAMPLES,):
            raise ValueError(f"expected an output of {PAIR_SAMPLES} samples, got {target.shape}")
        gains_for_pair = getattr(self.gain_source, "gains_for_pair", None)
        if gains_for_pair is None:
            self.process_hop(hop_a, target[:HOP_SAMPLES])
            self.process_hop(hop_b, target[HOP_SAMPLES:])
            return target
        np.copyto(self._features_a, self.analyze(hop_a))
        self.hold()
        features_b = self.analyze(hop_b)
        gains, strengths = gains_for_pair(self._features_a, features_b)
        self.synthesize_held(gains[0], strengths[0], target[:HOP_SAMPLES])
        self.synthesize(gains[1], strengths[1], target[HOP_SAMPLES:])
        return target

    @property
    def synthesis_band_energy(self) -> np.ndarray:
        """Band energies of the frame the next :meth:`synthesize` applies gains to (the live
        buffer, refilled by every :meth:`analyze`)."""
        return self.arrays["synth_energy_x"]

    @property
    def held_band_energy(self) -> np.ndarray:
        """Band energies of the frame kept by :meth:`hold` (the live buffer, refilled by every
        :meth:`hold`)."""
        return self.arrays["held_energy_x"]

    @property
    def pitch(self) -> tuple[int, float, int, float]:
        """(period, correlation) of the newest frame, then of the synthesis frame."""
        ints, floats = self.arrays["ints"], self.arrays["floats"]
        return (
            int(ints[I_PERIOD_NOW]),
            float(floats[F_RHO_NOW]),
            int(ints[I_PERIOD_SYNTH]),
            float(floats[F_RHO_SYNTH]),
        )

    @property
    def nonfinite_samples(self) -> int:
        """Input samples replaced by zero because they were NaN or infinite."""
        return int(self.arrays["ints"][I_NONFINITE])
