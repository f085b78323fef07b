"""Model towers: pluggable image backbones (timm) and the MiniLM text encoder."""
from wsense.models.image import ImageBackbone, create_image_backbone, image_transform  # noqa: F401
from wsense.models.text import TextEncoder, create_text_encoder  # noqa: F401
