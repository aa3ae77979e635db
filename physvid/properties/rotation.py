"""`rotation`: objects spin in place with angular velocity, acceleration and jerk (D^rotation)."""
from . import ROTATION, SingleProperty, register


@register
class Rotation(SingleProperty):
    name = "rotation"
    description = "objects rotate in place under third-order angular dynamics; position and intensity stay fixed"
    role = ROTATION
