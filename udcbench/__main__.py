from udcbench.cli import main

main()
