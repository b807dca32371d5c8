from echogains.cli import main

main()
