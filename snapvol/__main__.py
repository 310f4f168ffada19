from snapvol.cli import main

main()
