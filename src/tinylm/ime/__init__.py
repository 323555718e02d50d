"""A pinyin input method: typed pinyin -> ranked Chinese candidates (`tinylm ime`).

`syllables` reads what was typed into every split into syllables, `lattice` lists the characters and
phrases each span of syllables can be, `decode` finds the best paths under a character n-gram model
(optionally rescored by a neural model), `cli` is the verb and its interactive mode.
"""
