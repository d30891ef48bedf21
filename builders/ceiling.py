"""The exact Bayes ceiling (SPEC §6): the best accuracy any model can reach on a task.

A forward filter tracks every hypothesis (state, position in its string, element index, gap steps
done) consistent with the inputs seen so far, weighted by the generative law of the sampler: the
conditioned string law, the gap law (gap_prob, gap_start, duration) and uniform distractors among
the symbols the current state forbids. Its posterior over the label of each step is the output of
the ideal model; the ceiling is the SPEC §4 element accuracy of that ideal model.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from .grammar import END
from .sampler import Sampler, split_gap_steps


class BayesFilter:
    """Posterior P(label_t | inputs_1..t) for one split of one task."""

    def __init__(self, sampler: Sampler, split: str):
        self.sampler, self.params, self.grammar = sampler, sampler.params, sampler.grammar
        self.law = sampler.law
        fixed = split_gap_steps(self.params, split)
        step_pmf = {fixed: 1.0} if fixed is not None else self.params.duration_law.step_pmf()
        gp = self.params.gap_prob
        # gap-length pmf once gaps are allowed; before gap_start there is none
        self.gap_pmf = defaultdict(float, {k: gp * w for k, w in step_pmf.items()})
        self.gap_pmf[0] += 1.0 - gp
        self.max_gap = max(self.gap_pmf)
        self.h = self.law.h.tolist()
        self.degree = self.grammar.out_degree.tolist()
        # A silent gap step says nothing about the state: the filter skips those steps.
        self.silent_gaps = self.params.gap_content == "silence"
        start_states = self.grammar.start_states
        self.starts_by_symbol = defaultdict(list)
        for s, w in zip(start_states.tolist(), self.law.start_prob.tolist()):
            if w > 0:
                self.starts_by_symbol[int(self.grammar.state_symbol[s])].append((s, w))

    def hazard(self, e: int, j: int) -> float:
        """P(another gap step | element e has had j gap steps)."""
        if e < self.params.gap_start or j >= self.max_gap:
            return 0.0
        num = sum(w for k, w in self.gap_pmf.items() if k > j)
        den = sum(w for k, w in self.gap_pmf.items() if k >= j)
        return num / den if den > 0 else 0.0

    def continues(self, e: int) -> float:
        """P(the sample has an element e + 1 | it has element e). The element count is seq_len, or
        uniform on [seq_len_min, seq_len]; drawn apart from the strings and gaps. Matters where a
        symbol may be a distractor or the next element: after the last element it is a distractor."""
        high, low = self.params.seq_len, self.params.seq_len_min or self.params.seq_len
        beyond = lambda m: max(high - max(low, m + 1) + 1, 0)  # noqa: E731  (counts n in [low, high], n > m)
        return beyond(e + 1) / beyond(e) if beyond(e) else 0.0

    def gap_likelihood(self, s: int, x: int) -> float:
        gap_id = self.params.gap_id
        if self.params.gap_content == "silence":
            return 1.0 if x == gap_id else 0.0
        n = int(self.sampler.num_forbidden[s])
        if n == 0:
            return 1.0 if x == gap_id else 0.0
        return 1.0 / n if x < gap_id and self.grammar.next_state[s, x] < 0 or (s == END and x < gap_id) else 0.0

    def _elements_from(self, s: int, pos: int, x: int):
        """(next state, its position, probability) of the element showing symbol x after state s."""
        if x >= self.params.gap_id:
            return
        if s == END:
            for s0, w in self.starts_by_symbol.get(x, ()):
                yield s0, 0, w
            return
        s_next = int(self.grammar.next_state[s, x])
        if s_next >= 0:
            r = self.law.max_len - 1 - pos
            if r >= 1 and self.h[r][s] > 0:
                w = self.h[r - 1][s_next] / self.degree[s] / self.h[r][s]
                if w > 0:
                    yield s_next, pos + 1, w

    def posteriors(self, input_ids) -> list[dict[int, float]]:
        """For each step, {state: P(label = state | inputs up to this step)}."""
        hyps: dict = {}
        out = []
        cache = {}
        gap_id = self.params.gap_id
        for t, x in enumerate(np.asarray(input_ids).tolist()):
            if self.silent_gaps and t > 0 and x == gap_id:
                out.append(out[-1])
                continue
            new = defaultdict(float)
            if t == 0:
                for s0, _, w in self._elements_from(END, 0, x):
                    new[(s0, 0, 0, 0)] += w
            else:
                for (s, pos, e, j), w in hyps.items():
                    key = (e, j)
                    hz = cache.get(key)
                    if hz is None:
                        hz = cache[key] = 0.0 if self.silent_gaps else self.hazard(e, j)
                    if hz > 0:
                        lik = self.gap_likelihood(s, x)
                        if lik > 0:
                            new[(s, pos, e, j + 1)] += w * hz * lik
                    more = cache.get(e)
                    if more is None:
                        more = cache[e] = self.continues(e)
                    if hz < 1 and more > 0:
                        for s2, pos2, w2 in self._elements_from(s, pos, x):
                            new[(s2, pos2, e + 1, 0)] += w * (1 - hz) * w2 * more
            total = sum(new.values())
            if total <= 0:
                raise ValueError(f"step {t}: input {x} has probability 0 under the task's law")
            hyps = {k: w / total for k, w in new.items()}
            post = defaultdict(float)
            for (s, *_), w in hyps.items():
                post[s] += w
            out.append(dict(post))
        return out


def ceiling_counts(sampler: Sampler, split: str, rows) -> dict:
    """Element and per-step accuracy of the ideal model on rows (dicts of per-step arrays): the exact
    posteriors, as a model's softmax outputs, scored by the SPEC §4 metric. With distractor gaps
    the posteriors are summed over the element's window as the metric sums a model's outputs; the
    posterior at the element's own step alone would score up to 0.00015 more (task `distractor`,
    seeds 1 and 3, 1,000 test rows), its last window step up to 0.0002 less."""
    filt = BayesFilter(sampler, split)
    el_correct = el_total = st_correct = st_total = 0
    for row in rows:
        ids, labels, elem = (np.asarray(row[k]) for k in ("input_ids", "labels", "element_index"))
        first = np.flatnonzero(np.diff(elem, prepend=-1))  # first step of each element
        window_len = np.diff(np.append(first, len(elem)))
        if filt.silent_gaps:
            # silent steps repeat the element's posterior: the window's argmax is the element's
            best = np.array([_argmax(p) for p in filt.posteriors(ids[first])])
            hit = best == labels[first]
            el_correct += int(hit.sum())
            st_correct += int((hit * window_len).sum())
        else:
            posts = filt.posteriors(ids)
            st_correct += sum(int(_argmax(p) == y) for p, y in zip(posts, labels.tolist()))
            for a, n in zip(first.tolist(), window_len.tolist()):
                window = defaultdict(float)
                for p in posts[a:a + n]:
                    for s, w in p.items():
                        window[s] += w
                el_correct += int(_argmax(window) == labels[a])
        el_total += len(first)
        st_total += len(elem)
    return {"element_correct": el_correct, "elements": el_total, "step_correct": st_correct, "steps": st_total}


def _argmax(post: dict[int, float]) -> int:
    """Highest posterior, ties to the lowest state index (as numpy's argmax on a dense vector)."""
    best = max(post.values())
    return min(s for s, w in post.items() if w >= best * (1 - 1e-12))


def bayes_ceiling(sampler: Sampler, split: str, num_samples: int) -> dict:
    batch = sampler.generate(split, np.arange(num_samples))
    c = ceiling_counts(sampler, split, batch.rows())
    return {"element_accuracy": c["element_correct"] / c["elements"],
            "step_accuracy": c["step_correct"] / c["steps"], "num_samples": num_samples}
