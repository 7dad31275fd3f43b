"""Judge resets (`reset_every`): back to the pretrained judges and a fresh optimiser at the
end of every k-th outer iteration."""

import equinox as eqx

from engine.core.optim import adam_init, is_due, params, tree_select
from engine.core.state import RunInputs, RunState, fresh_judge_opt


def reset_judges(state: RunState, run: RunInputs, outer) -> RunState:
    """The reset at the end of outer iteration `outer` where it is due (the meta-judge too, where
    there is one: a no-op unless it learns)."""
    due = is_due(run.condition.reset_every, outer)
    fresh = (run.pretrained, fresh_judge_opt(run.pretrained, run.condition.lr_judge))
    judges, judge_opt = tree_select(due, fresh, (state.judges, state.judge_opt))
    state = eqx.tree_at(lambda s: (s.judges, s.judge_opt), state, (judges, judge_opt))
    if state.meta is not None:
        fresh_meta = (run.meta_pretrained, adam_init(params(run.meta_pretrained), run.condition.lr_judge))
        meta_judge, meta_opt = tree_select(due, fresh_meta, (state.meta.judge, state.meta.opt))
        state = eqx.tree_at(lambda s: (s.meta.judge, s.meta.opt), state, (meta_judge, meta_opt))
    return state
