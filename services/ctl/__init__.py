"""rcs-ctl: the operator command line."""
