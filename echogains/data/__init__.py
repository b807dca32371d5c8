"""Echo data: nnU-Net raw dataset I/O and verification, converters (CAMUS, EchoNet-Dynamic), phantom."""
