from ftdyn.report.build import main

main()
