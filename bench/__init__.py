"""``make bench``: the broker's own ceiling and the service's figures, measured in one run."""
