"""`dynamic-mnist` (paper §4.1): three MNIST digits per sequence, one translating, one rotating, one changing intensity."""
from ..errors import ConfigError
from . import INTENSITY, ROTATION, TRANSLATION, Property, register


@register
class DynamicMNIST(Property):
    name = "dynamic-mnist"
    description = "three MNIST digits: one translates, one rotates, one grows or decays in intensity (needs --digits)"

    def validate(self, config):
        if not config.shape.digits:
            raise ConfigError("property 'dynamic-mnist' needs shape.digits (--digits PATH to an MNIST idx3 images file, "
                              "e.g. ../shared/data/mnist/t10k-images-idx3-ubyte.gz)")

    def max_objects(self, config):
        return 3

    def plan(self, index, rng, config):
        roles = [TRANSLATION, ROTATION, INTENSITY]
        rng.shuffle(roles)  # which slot (and so which drawing order) holds which property varies per sequence
        return [(r, "digit") for r in roles]
