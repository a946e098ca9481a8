"""parkwatch: the application package, and the contract every other package stands on.

Shared (imported by ``collector``, ``kpi``, ``rules``, ``notify``, ``dashboards`` and
``simulators``; these modules import nothing from those packages):

* :mod:`parkwatch.schema`   the device payload contract: topics and one model per kind
* :mod:`parkwatch.settings` the one settings tree, a section per subsystem
* :mod:`parkwatch.errors`   the one exception tree
* :mod:`parkwatch.points`   the validated reading as it travels the pipeline

Application (imports the packages above and wires them together):

* :mod:`parkwatch.service`  every stage under one TaskGroup: the pipeline, top to bottom
* :mod:`parkwatch.cli`      the ``parkwatch`` console script
* :mod:`parkwatch.demo`     ``parkwatch demo``
* :mod:`parkwatch.localservers` Mosquitto / InfluxDB / ... as child processes, for the demo
"""
