"""The tidepool registry: the name service engines register with and routers watch."""
