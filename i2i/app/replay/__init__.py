"""Next-day replay: build the system as of day D-1, replay day D's users through the recall server."""
