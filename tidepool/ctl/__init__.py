"""`tidepool ctl`: the admin command line (listings, aliases, tenant routes, drains)."""
