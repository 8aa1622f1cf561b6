"""Emulated stand hardware behind pseudo-terminals, for `make run` and the tests."""
