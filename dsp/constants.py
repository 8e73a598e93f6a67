"""Fixed dimensions of the PercepNet chain and the delay budget, written down once."""

SAMPLE_RATE_HZ = 48_000
HOP_SAMPLES = 480  # 10 ms hop
WINDOW_SAMPLES = 960  # 20 ms power-complementary window
NUM_BINS = WINDOW_SAMPLES // 2 + 1  # 481 real-FFT bins, 50 Hz apart
NUM_BANDS = 34
MAX_BAND_HZ = 20_000.0  # bands cover 0–20 kHz; bins above follow the last band
LOOKAHEAD_HOPS = 2  # the network and the comb filter see 20 ms of future
LOOKAHEAD_SAMPLES = LOOKAHEAD_HOPS * HOP_SAMPLES
# Delay: the STFT overlap (window − hop = 10 ms) plus the 20 ms look-ahead = 30 ms.
DELAY_SAMPLES = (WINDOW_SAMPLES - HOP_SAMPLES) + LOOKAHEAD_SAMPLES
DELAY_SECONDS = DELAY_SAMPLES / SAMPLE_RATE_HZ

MIN_PITCH_HZ = 62.5
MAX_PITCH_HZ = 800.0
MIN_PERIOD_SAMPLES = int(SAMPLE_RATE_HZ / MAX_PITCH_HZ)  # 60
MAX_PERIOD_SAMPLES = int(SAMPLE_RATE_HZ / MIN_PITCH_HZ)  # 768

NUM_FEATURES = 2 * NUM_BANDS + 2  # log energies, pitch coherences, period, correlation
# Bumped whenever a change alters features or targets, so cached training data is rebuilt.
DSP_VERSION = 1
