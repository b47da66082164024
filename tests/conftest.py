"""Settings for the whole suite."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# Property tests assert what code does, not how fast: a loaded 2-core CI machine must
# not fail one because an example took longer than hypothesis's 200 ms default.
settings.register_profile(
    "tidepool", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("tidepool")
