"""Experiments: one module per paper behind ``invphys reproduce --paper NAME``.

* :mod:`.papers`: the registry of papers and the dispatcher (how a paper registers);
* :mod:`.report`: the shared report writer (tables, figures, results.json, README);
* :mod:`.models`: the one "shipped model or train" resolver (``--models DIR``);
* :mod:`.timing`: the one timing helper (compile and run apart, best of k);
* papers: :mod:`.deceptron` (with the Deblur-2D study, :mod:`.deblur`).
"""
