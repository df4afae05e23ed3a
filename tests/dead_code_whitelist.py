"""Functions vulture cannot see called, for tests/test_dead_code.py: the frameworks call them.

Vulture matches names, not objects: each entry keeps every function of that name alive. The
test checks that each entry still names a function defined in icckd_cli/.
"""

from vulture.whitelist_utils import Whitelist

_ = Whitelist()

CALLED_BY_THE_FRAMEWORKS = [
    # Typer: the app's callback (cli/common.py) and commands registered by @app.command
    _._root,
    _.quickstart,
    _.eval_,
    _.inspect_softlabels,
    # data sets registered by @register(NAME) and looked up by name (data/)
    _._digits,
    _._imagefolder,
    _._imagenet,
    _._tinyimagenet,
    # torch: nn.Module.__call__ runs forward; print(module) runs extra_repr
    _.forward,
    _.extra_repr,
    # Python: a module's __getattr__ (PEP 562) serves names imported lazily (methods/crd.py)
    _.__getattr__,
    # pydantic: validators run when a model is built (settings/, experiment, executor)
    _._data_set_defaults,
    _._imbalance,
    _._one_validation_rule,
    _._check_decay,
    _._check_model_args,
    _._check_teacher_model_args,
    _._live_teacher,
    _._one_kind,
    _._distinct,
    _._methods_check,
    _._store_holds_no_maps,
    _._directives,
]

# Called only by tests today, in modules other work is changing: each is listed in the
# report for issue 32 to be removed or put to use there. Delete an entry when it goes.
CALLED_ONLY_BY_TESTS = [
    _.contents,  # methods/queue.py: tests/test_distributed.py reads the queue with it
]
