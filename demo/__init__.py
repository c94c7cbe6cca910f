"""``make demo``: a program run from a checkout (it writes under the repository's out/)."""
