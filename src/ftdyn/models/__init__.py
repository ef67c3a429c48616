"""Models and their checkpoints: ftdyn's own ladders as stored (`ladders`), hub ladders (`hub`),
loading either (`checkpoints`), fingerprints, the classification head (`heads`), the base a job
compares with (`reference`) and real-size stand-ins (`stand_ins`)."""
