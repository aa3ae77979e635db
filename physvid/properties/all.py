"""`all`: the union of the three single-property sets, balanced (D^all of the paper's §3.2, used to train the decoder H)."""
from . import INTENSITY, ROTATION, TRANSLATION, Property, register

_CYCLE = (TRANSLATION, ROTATION, INTENSITY)


@register
class All(Property):
    name = "all"
    description = "sequence i exercises translation, rotation or intensity for i mod 3 = 0, 1, 2 (exactly balanced)"

    def plan(self, index, rng, config):
        # The index, not the RNG, picks the property, so any contiguous block of 3k sequences is exactly balanced.
        role = _CYCLE[index % 3]
        n = self.num_objects(rng, config)
        return list(zip([role] * n, self.shapes(rng, config, n)))
