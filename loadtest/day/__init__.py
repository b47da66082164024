"""`tidepool loadtest day`: a day of traffic on a simulated clock, driving the scheduler's own
decision code against a simulated fleet, to compare static, autoscaled and tidepool pools."""
