"""`translation`: objects move with velocity, acceleration and jerk; no rotation, constant intensity (D^translation)."""
from . import TRANSLATION, SingleProperty, register


@register
class Translation(SingleProperty):
    name = "translation"
    description = "objects translate under third-order dynamics; orientation and intensity stay fixed"
    role = TRANSLATION
