"""`intensity`: static objects whose intensity grows or decays by convolution with a kernel of sum g (D^intensity)."""
from . import INTENSITY, SingleProperty, register


@register
class Intensity(SingleProperty):
    name = "intensity"
    description = "static objects whose layer is convolved each frame with a kernel of sum g (grow if g > 1, decay if g < 1)"
    role = INTENSITY
