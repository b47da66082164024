"""The scheduler policy a simulated day runs by default (`--policy` replaces it).

The live default (`scheduler.policy.DEFAULT_POLICY_TEXT`) is tuned for a
demo on one machine: a 1 s tick, 5 s engine starts. A day's tide moves over
hours, cloud engines take minutes, and a model switch a minute, so the loop is
slower and the waits longer. The provider's start times, prices, slots, speed
and weights are replaced by the fleet file's (`FleetConfig.for_policy`).
"""

from __future__ import annotations

DAY_POLICY_TEXT = """\
# The pool scheduler's policy for `tidepool loadtest day` (the live keys and rules).

[scheduler]
interval_s = 15.0          # one tick every 15 simulated seconds
window_s = 120.0           # utilisation smoothed over 2 minutes
cooldown_s = 300.0         # per pool, after a move or a scale step
min_stay_s = 900.0         # a moved (or started) engine stays at least 15 minutes
drain_timeout_s = 60.0     # in-flight work an engine may finish before its switch
switch_timeout_s = 300.0   # a switch not done by then is rolled back
leader_ttl_s = 30.0
expected_switch_s = 60.0   # the fleet's model-switch time
start_within_s = 300.0     # a growing pool may wait for cvm (3 minutes)
urgent_start_within_s = 30.0  # a saturated pool gets serverless (20 s)
max_moves_per_tick = 4     # a tide needs a few engines per cooldown, not one

[[pools]]
name = "zh-public"
lang = "zh"
min = 2
max = 40
target_utilization = 0.6
high_watermark = 0.8
low_watermark = 0.3
lend_to = ["en-public"]

[[pools]]
name = "en-public"
lang = "en"
min = 2
max = 40
target_utilization = 0.6
high_watermark = 0.8
low_watermark = 0.3
lend_to = ["zh-public"]

[providers.local]
tiers = ["cvm", "serverless"]
start_s = { cvm = 180.0, serverless = 20.0 }     # replaced by the fleet file's
price_per_hour = { idc = 0.8, cvm = 1.0, serverless = 1.5 }  # replaced likewise
max_engines = 40
"""
