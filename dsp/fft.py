"""Real FFT of one 960-sample frame, in numba, over caller-owned buffers.

numba cannot call numpy's FFT, and the hop must not allocate, so the 960-point real transform
is computed as a 480-point complex transform (even samples in the real part, odd in the
imaginary part) followed by the usual split step. The 480-point transform is a self-sorting
(Stockham) mixed-radix FFT over the factors 4·4·5·3·2 with precomputed twiddles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from dsp.constants import NUM_BINS, WINDOW_SAMPLES

if TYPE_CHECKING:
    from dsp.state import EnhancerState

HALF_SAMPLES = WINDOW_SAMPLES // 2  # complex transform length (480)
RADICES = (4, 4, 5, 3, 2)
_SIN_60 = float(np.sin(np.pi / 3))
_COS_72 = float(np.cos(2 * np.pi / 5))
_COS_144 = float(np.cos(4 * np.pi / 5))
_SIN_72 = float(np.sin(2 * np.pi / 5))
_SIN_144 = float(np.sin(4 * np.pi / 5))


@dataclass(frozen=True)
class FftPlan:
    """Twiddle tables for the 960-point real FFT; build once with :func:`make_fft_plan`."""

    radices: np.ndarray  # int64[stages]
    stage_twiddle_offsets: np.ndarray  # int64[stages]: offset of each stage's W_{Lp}^{qk} table
    stage_twiddles: np.ndarray  # complex128: per stage, p×L table of W_{Lp}^{qk}
    split_twiddles: np.ndarray  # complex128[NUM_BINS]: e^{-2πik/960}
    work_a: np.ndarray  # complex128[480] scratch
    work_b: np.ndarray  # complex128[480] scratch


def make_fft_plan() -> FftPlan:
    """Precompute the tables and scratch buffers for :func:`rfft960` and :func:`irfft960`."""
    assert int(np.prod(RADICES)) == HALF_SAMPLES
    assert set(RADICES) <= {2, 3, 4, 5}, "only radix-2/3/4/5 butterflies are written"
    offsets, tables = [], []
    span, position = 1, 0
    for radix in RADICES:
        q = np.arange(radix)[:, None]
        k = np.arange(span)[None, :]
        table = np.exp(-2j * np.pi * q * k / (span * radix)).ravel()
        offsets.append(position)
        tables.append(table)
        position += table.size
        span *= radix
    bins = np.arange(NUM_BINS)
    return FftPlan(
        radices=np.array(RADICES, dtype=np.int64),
        stage_twiddle_offsets=np.array(offsets, dtype=np.int64),
        stage_twiddles=np.concatenate(tables).astype(np.complex128),
        split_twiddles=np.exp(-2j * np.pi * bins / WINDOW_SAMPLES).astype(np.complex128),
        work_a=np.zeros(HALF_SAMPLES, dtype=np.complex128),
        work_b=np.zeros(HALF_SAMPLES, dtype=np.complex128),
    )


@njit(cache=True, nogil=True, inline="always")
def _load(src, twiddles, tw0, span, groups, j, k, q):
    value = src[(j + groups * q) * span + k]
    if span == 1:  # first stage: every twiddle is 1
        return value
    return twiddles[tw0 + q * span + k] * value


@njit(cache=True, nogil=True)
def _pass(src, dst, p, span, groups, twiddles, tw0) -> None:
    """One Stockham stage of radix ``p`` (2, 3, 4 or 5; :func:`make_fft_plan` allows no other)."""
    if p == 2:
        for j in range(groups):
            for k in range(span):
                t0 = src[j * span + k]
                t1 = _load(src, twiddles, tw0, span, groups, j, k, 1)
                base = j * span * 2 + k
                dst[base] = t0 + t1
                dst[base + span] = t0 - t1
    elif p == 3:
        for j in range(groups):
            for k in range(span):
                t0 = src[j * span + k]
                t1 = _load(src, twiddles, tw0, span, groups, j, k, 1)
                t2 = _load(src, twiddles, tw0, span, groups, j, k, 2)
                s = t1 + t2
                d = t1 - t2
                m = t0 - 0.5 * s
                rot = complex(_SIN_60 * d.imag, -_SIN_60 * d.real)  # -i·sin60·d
                base = j * span * 3 + k
                dst[base] = t0 + s
                dst[base + span] = m + rot
                dst[base + 2 * span] = m - rot
    elif p == 4:
        for j in range(groups):
            for k in range(span):
                t0 = src[j * span + k]
                t1 = _load(src, twiddles, tw0, span, groups, j, k, 1)
                t2 = _load(src, twiddles, tw0, span, groups, j, k, 2)
                t3 = _load(src, twiddles, tw0, span, groups, j, k, 3)
                a0 = t0 + t2
                a1 = t0 - t2
                a2 = t1 + t3
                d = t1 - t3
                a3 = complex(d.imag, -d.real)  # -i·d
                base = j * span * 4 + k
                dst[base] = a0 + a2
                dst[base + span] = a1 + a3
                dst[base + 2 * span] = a0 - a2
                dst[base + 3 * span] = a1 - a3
    elif p == 5:
        for j in range(groups):
            for k in range(span):
                t0 = src[j * span + k]
                t1 = _load(src, twiddles, tw0, span, groups, j, k, 1)
                t2 = _load(src, twiddles, tw0, span, groups, j, k, 2)
                t3 = _load(src, twiddles, tw0, span, groups, j, k, 3)
                t4 = _load(src, twiddles, tw0, span, groups, j, k, 4)
                a1 = t1 + t4
                b1 = t1 - t4
                a2 = t2 + t3
                b2 = t2 - t3
                m1 = t0 + _COS_72 * a1 + _COS_144 * a2
                m2 = t0 + _COS_144 * a1 + _COS_72 * a2
                v1 = _SIN_72 * b1 + _SIN_144 * b2
                v2 = _SIN_144 * b1 - _SIN_72 * b2
                r1 = complex(v1.imag, -v1.real)  # -i·v1
                r2 = complex(v2.imag, -v2.real)
                base = j * span * 5 + k
                dst[base] = t0 + a1 + a2
                dst[base + span] = m1 + r1
                dst[base + 4 * span] = m1 - r1
                dst[base + 2 * span] = m2 + r2
                dst[base + 3 * span] = m2 - r2


@njit(cache=True, nogil=True)
def _stockham(
    data: np.ndarray,
    scratch: np.ndarray,
    radices: np.ndarray,
    twiddle_offsets: np.ndarray,
    twiddles: np.ndarray,
) -> np.ndarray:
    """Forward complex DFT of ``data`` (length 480); returns whichever buffer holds the result.

    Stage invariant: before a radix-p stage the buffer is a (r·p) × L array whose row j holds
    the length-L DFT of the subsequence j, j + r·p, j + 2r·p, ...; the stage merges p rows into
    one length-L·p DFT: B[j, k + L·s] = Σ_q W_p^{qs} · W_{Lp}^{qk} · A[j + r·q, k].
    """
    n = data.shape[0]
    src = data
    dst = scratch
    span = 1
    for stage in range(radices.shape[0]):
        p = radices[stage]
        groups = n // (span * p)
        _pass(
            src,
            dst,
            p,
            span,
            groups,
            twiddles,
            twiddle_offsets[stage],
        )
        src, dst = dst, src
        span *= p
    return src


@njit(cache=True, nogil=True)
def rfft960(
    frame: np.ndarray,
    spectrum: np.ndarray,
    work_a: np.ndarray,
    work_b: np.ndarray,
    radices: np.ndarray,
    twiddle_offsets: np.ndarray,
    twiddles: np.ndarray,
    split_twiddles: np.ndarray,
) -> None:
    """Write the 481-bin spectrum of the real 960-sample ``frame`` into ``spectrum``."""
    for n in range(HALF_SAMPLES):
        work_a[n] = complex(frame[2 * n], frame[2 * n + 1])
    z = _stockham(work_a, work_b, radices, twiddle_offsets, twiddles)
    for k in range(NUM_BINS):
        zk = z[k % HALF_SAMPLES]
        zc = np.conj(z[(HALF_SAMPLES - k) % HALF_SAMPLES])
        even = 0.5 * (zk + zc)
        odd = 0.5 * (zk - zc)
        # X[k] = E[k] + W^k O[k], with O[k] = -i·odd
        spectrum[k] = even + split_twiddles[k] * complex(odd.imag, -odd.real)


@njit(cache=True, nogil=True)
def irfft960(
    spectrum: np.ndarray,
    frame: np.ndarray,
    work_a: np.ndarray,
    work_b: np.ndarray,
    radices: np.ndarray,
    twiddle_offsets: np.ndarray,
    twiddles: np.ndarray,
    split_twiddles: np.ndarray,
) -> None:
    """Write the real 960-sample inverse of the 481-bin ``spectrum`` into ``frame``."""
    for k in range(HALF_SAMPLES):
        xk = spectrum[k]
        xc = np.conj(spectrum[HALF_SAMPLES - k])
        even = 0.5 * (xk + xc)
        odd = 0.5 * (xk - xc) * np.conj(split_twiddles[k])
        # Z[k] = E[k] + i·O[k]; the inverse uses conj(FFT(conj(Z))) / 480
        zk = even + complex(-odd.imag, odd.real)
        work_a[k] = np.conj(zk)
    z = _stockham(work_a, work_b, radices, twiddle_offsets, twiddles)
    scale = 1.0 / HALF_SAMPLES
    for n in range(HALF_SAMPLES):
        frame[2 * n] = z[n].real * scale
        frame[2 * n + 1] = -z[n].imag * scale


@njit(cache=True, nogil=True)
def forward_fft(state: EnhancerState, frame: np.ndarray, spectrum: np.ndarray) -> None:
    """:func:`rfft960` with the plan and scratch held in the enhancer state."""
    rfft960(
        frame,
        spectrum,
        state.fft_work_a,
        state.fft_work_b,
        state.fft_radices,
        state.fft_twiddle_offsets,
        state.fft_twiddles,
        state.fft_split,
    )


@njit(cache=True, nogil=True)
def inverse_fft(state: EnhancerState, spectrum: np.ndarray, frame: np.ndarray) -> None:
    """:func:`irfft960` with the plan and scratch held in the enhancer state."""
    irfft960(
        spectrum,
        frame,
        state.fft_work_a,
        state.fft_work_b,
        state.fft_radices,
        state.fft_twiddle_offsets,
        state.fft_twiddles,
        state.fft_split,
    )
