"""The facts family: in-weights vs in-context use of the same facts.

``headline`` (and its ``reversal`` / ``syllogism`` variants) trains facts into the weights and asks
for their reversals and two-hop deductions, beside the same facts in context and the bridges
(augmentation, retrieval, recall into context, identity facts); ``recall`` and ``reinforce`` are the
recall bridge's supervised and REINFORCE phases; ``semantic`` asks the same of category properties in a
structured world and its control; ``binding`` is what those two share (model, phase-2 training and
sampler, self-generated augmentation), ``queryset`` the query sets (one base, a subclass per
experiment), ``plots`` the family's pictures.
"""
