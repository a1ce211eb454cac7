from hptune.cli import main

main()
