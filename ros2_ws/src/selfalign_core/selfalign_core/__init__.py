"""selfalign_core: what every selfalign package shares; it imports none of them."""
