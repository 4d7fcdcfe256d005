"""Evaluation of runs (walt-eval, walt-sample's sampling, walt-train's after-training hook).

    sampling     per-sample seeded labels and noise, generate(): the same clips on any batch size;
                 frame-prediction models continue real context clips (context_latents)
    state        resumable passes on disk (one atomic writer: walt.runs.atomic_write), progress bars
    checkpoints  which checkpoint files ckpt=last|all|<steps> names
    extractors   the networks metrics need (video extractor, InceptionV3, C3D), one interface
    reference    reference clips and their cached network outputs; ContextClips (frame prediction)
    context      what every checkpoint of one evaluation shares
    diffusion    stage 2: samples -> fvd*, is_synth, synth_acc, fid / is / kid, is_c3d
    autoencoder  stage 1: reconstructions -> psnr, ssim, rfvd*
    tensorboard  eval/* scalars and sample clips at each checkpoint's global step, HPARAMS session
    evaluate     evaluate_run / evaluate_after_train / evaluate_untrained / hp_metric_tags
    cli          walt-eval
"""
