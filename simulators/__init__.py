"""Device fleets and incident scenarios played into the broker from outside the service."""
