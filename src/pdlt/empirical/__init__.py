"""The empirical side: ensembles of real networks, autodiff observables, statistics."""
