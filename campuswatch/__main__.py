from campuswatch.cli import main

main()
