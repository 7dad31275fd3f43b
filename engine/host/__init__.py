"""The host pipeline from a study dict to a Dataset: checks, plan, program, runner, results,
and the files and devices around them. Nothing here runs traced."""
