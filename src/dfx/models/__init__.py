"""Networks: the backbone registry, the fusion head and the assembled detector."""
