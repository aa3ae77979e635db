"""`mixed`: several objects in one sequence, each driven by a different property where the object count allows."""
from . import INTENSITY, ROTATION, TRANSLATION, Property, _check_min_objects, register

_CYCLE = (TRANSLATION, ROTATION, INTENSITY)


@register
class Mixed(Property):
    name = "mixed"
    description = "2+ objects per sequence with different properties (cycling translation, rotation, intensity from a random start)"

    def validate(self, config):
        _check_min_objects(config, self.name, 2)

    def num_objects(self, rng, config):
        lo, hi = config.shape.num_objects
        return int(rng.integers(max(lo, 2), hi + 1))

    def plan(self, index, rng, config):
        n = self.num_objects(rng, config)
        start = int(rng.integers(0, 3))
        roles = [_CYCLE[(start + k) % 3] for k in range(n)]
        return list(zip(roles, self.shapes(rng, config, n)))
