"""Model towers: pluggable image backbones (timm) and the MiniLM text encoder."""
from wsense.models.image import ImageBackbone, ImageTower, create_image_backbone  # noqa: F401
from wsense.models.text import TextEncoder, create_text_encoder  # noqa: F401
