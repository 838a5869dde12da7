"""Invoke tasks: the lab's entry points (``invoke --list``).

Tasks only parse arguments, call one function in gafkd/ or provisioning/, and print the result;
ConfigError and ProvisionError become one-line errors here, and nowhere else. One module per
area, each task added to the root collection so names stay single verbs (``invoke train``).
"""

from invoke.collection import Collection

from tasks import experiment, provision

ns = Collection()
for module in (experiment, provision):
    for task in Collection.from_module(module).tasks.values():
        ns.add_task(task)
