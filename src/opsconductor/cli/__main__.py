from opsconductor.cli import main

main()
