"""Host state of the lab's GPU server: checked, then changed (docs/provisioning.md).

This package never imports torch or gafkd.
"""
