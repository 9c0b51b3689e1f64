"""The model: timm backbones and heads, ImageNet weights, medtune's model file, Grad-CAM."""
