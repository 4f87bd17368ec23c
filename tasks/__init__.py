"""Tasks; each module or package registers its task with ``@register_task``."""
