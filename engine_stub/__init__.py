"""A stand-in GPU speech-evaluation engine built on the tidepool engine SDK."""
