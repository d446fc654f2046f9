"""hydra/launcher=slurm: the SLURM launcher of hydra-submitit-launcher, with beft's accounting
(beft/submitit_launcher.py). Hydra instantiates launchers only from the hydra_plugins package, and imports every
module here on each start: the work is imported when a sweep is launched, not before."""
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher


class SlurmLauncher(SubmititSlurmLauncher):
    def launch(self, job_overrides, initial_job_idx):
        from beft.submitit_launcher import launch

        return launch(self, job_overrides, initial_job_idx)

    def __call__(self, *args, **kwargs):
        from beft.submitit_launcher import run_in_job

        return run_in_job(self, super().__call__, *args, **kwargs)
