# Floor against library, median time per operation, log scale.
#   gnuplot -e "datafile='chart.dat'; outfile='chart.png'" bench/chart.gp
# chart.dat: one line per case: "label" floor_us library_us
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size 1200,700 font "sans,10"
} else {
  set terminal png size 1200,700
}
set termoption noenhanced
set output outfile
set title "atomic_state against the floor (the same system calls written by hand)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set yrange [1:*]
set ylabel "median time per operation (µs, log scale)"
set grid ytics
set xtics rotate by -35 scale 0 nomirror
set bmargin 12
set rmargin 12
set key top left
plot datafile using 2:xtic(1) title "floor" linecolor rgb "#8c8c8c", \
     '' using 3 title "atomic_state" linecolor rgb "#1f77b4"
