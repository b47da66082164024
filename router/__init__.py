"""The router sidecar: resolve a request to a pool, pick an endpoint, forward the call.

Pure decision logic lives in its own modules: `endpoint` (the router's view of an
instance), `balancer` (pickers), `slow_start` (ramping weights) and `outlier`
(passive ejection, panic mode, last resort).
"""
