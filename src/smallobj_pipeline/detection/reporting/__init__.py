"""Reporting: the HTML study report and its figures. ``report`` gathers the experiments' outputs
and renders ``templates/report.html.j2`` (Jinja2); ``draw`` is the one routine that draws boxes
(and masks) on an image, through torchvision; ``preview`` is the augmentation preview grid.
"""
