"""Development stack: run the whole system locally (broker, emulators, services) for tests and `make run`."""
